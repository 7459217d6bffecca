//! Unit tests of the endpoint core.
