//! The beta JSON-lines wire protocol: message types and line framing.
