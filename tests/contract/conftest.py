"""Fixtures of the contract suite that live in their own module (see ``driver_fixtures``)."""

from tests.contract.driver_fixtures import blob_store, harness, image_harness

__all__ = ["blob_store", "harness", "image_harness"]
