//! `hvm-restore-check`: replay and check (not yet built; see the project's issues).
