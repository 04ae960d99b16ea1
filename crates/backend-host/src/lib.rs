//! Host backend: a private staging directory per session.
