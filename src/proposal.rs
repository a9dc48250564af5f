//! See lib.rs for the layout.
