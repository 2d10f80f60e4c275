"""The W5XDE operator: reconciles CompressionCluster resources into worker pods."""
