//! placeholder, replaced by the tds-sim work
