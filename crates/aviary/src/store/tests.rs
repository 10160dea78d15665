//! Tests of the store: round trips through the file, load-time expiry, space reuse,
//! refusal of damaged / newer / foreign / unreadable stores, the writer's group commit.
