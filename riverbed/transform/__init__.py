"""The transform stage: raw CDC files -> quality rules + SQL transforms -> staged batches."""
