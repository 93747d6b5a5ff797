//! nodebake first-boot agent.
