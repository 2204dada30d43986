"""The indexer Lambda: S3 ObjectCreated/ObjectRemoved notifications via SQS → the catalog."""
