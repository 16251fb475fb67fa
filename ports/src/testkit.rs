//! Contract suite for storage adapters (being written).
