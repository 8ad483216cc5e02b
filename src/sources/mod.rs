//! Inputs other than the request/response front ends: each a folder with its configuration, its
//! run loop and its tests.

pub mod kafka;
