//! Run a tool in its own process group with deadlines, capture or streaming.
