//! placeholder, replaced by the probes work
