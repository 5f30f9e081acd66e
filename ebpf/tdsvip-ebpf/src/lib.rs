//! Empty on purpose: the library target only lets `tdsvip-node` name this crate as a
//! build-dependency, so that cargo re-runs its build script when the kernel programs change.
#![no_std]
