//! Primitive wire encodings (spec 1.5): two-byte integers, variable byte integers, UTF-8
//! strings, binary data and string pairs.
