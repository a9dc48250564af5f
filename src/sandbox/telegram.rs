//! Twin: see the module docs in mod.rs.
