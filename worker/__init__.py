"""The W5XDE worker: streams zstd-compressed batches to its peers over tuned TCP."""
