//! Empty library target: this package only holds the integration tests and benchmarks.
