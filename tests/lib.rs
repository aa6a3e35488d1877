//! Shared helpers of the integration tests.
#![deny(missing_docs)]
