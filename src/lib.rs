pub mod alert;
pub mod config;
pub mod detect;
pub mod engine;
pub mod event;
pub mod stats;
pub mod time;
