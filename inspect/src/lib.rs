//! `hvm-inspect`: the offline inspector (not yet built; see the project's issues).
