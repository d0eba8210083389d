"""One module per family of S3 operations; each handler takes the proxy, the request, the caller."""
