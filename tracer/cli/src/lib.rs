//! The `tracer` program's library: protocol client, ring reader, formats.
#![deny(missing_docs)]
