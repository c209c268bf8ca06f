//! The Callosum load generator: opens thousands of connections against Callosum servers and
//! measures handshake latency (hdrhistogram), slot distribution and errors. Built out in the
//! load generator issue.
#![deny(missing_docs)]
