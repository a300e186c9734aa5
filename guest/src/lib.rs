//! `hvm-guest`: a KVM guest with a built-in workload (not yet built; see the project's issues).
