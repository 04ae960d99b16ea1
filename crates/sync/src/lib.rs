//! Push and pull between the in-memory VFS and a host staging directory, costing what changed.
