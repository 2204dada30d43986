"""The transcoder function: derived copies of stored instances, as the policy says."""
