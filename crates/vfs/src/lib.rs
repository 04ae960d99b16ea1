//! In-memory workspace tree with metadata, a change journal and workspace images.
