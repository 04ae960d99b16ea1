//! Lima (gamma) backend: runs tools in a Lima VM through limactl.
