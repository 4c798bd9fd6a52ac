"""The lake: storage backends, Parquet files and the manifest that every stage shares."""
