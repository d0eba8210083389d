"""Catalog service: data sets, data objects and their CIMI filters."""
