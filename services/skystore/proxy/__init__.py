"""The per-region S3 proxy: S3 REST in front, the locator and the regions' S3 stores behind."""
