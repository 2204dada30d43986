"""The AWS CDK app of the PACS: one Construct per concern, two stacks per stage (network, application)."""
