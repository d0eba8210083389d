"""SkyStore: one S3 namespace over several regions (a locator and one S3 proxy per region)."""
