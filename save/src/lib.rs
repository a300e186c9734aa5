//! `hvm-save`: the live save producer (not yet built; see the project's issues).
