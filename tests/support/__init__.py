"""Test and benchmark helpers: a loopback package index, fixture projects, Docker fixtures."""
