//! feidan: a streaming detector of order diversion (飞单) by key account
//! managers. Sales-activity events come in from Kafka; alerts go out to a
//! Kafka topic and to Prometheus. See `README.md` and `../shared/DESIGN.md`.
//!
//! # Layout
//!
//! The data flows top to bottom:
//!
//! - [`event`]: schema-v1 sales events and the decoder (bytes → event or dead-letter reason).
//! - [`engine`]: the pure engine — watermark, de-duplication, account stage, facts,
//!   manager stage, alert lifecycle. No I/O, no clock.
//! - [`detect`]: the detectors, plain functions from windowed counts to findings.
//! - [`stats`]: the statistical tests alerts cite (binomial, beta-binomial tails).
//! - [`alert`]: alert transitions, schema v1, and their JSON and one-line forms.
//! - [`changelog`]: how engine checkpoints are kept in the compacted state topic
//!   so that a crash at any moment leaves a complete checkpoint to restore.
//! - [`kafka`]: the edges — consumer, alert, dead-letter and state producers, state
//!   restore, embedded mock broker.
//! - [`service`]: the live loop (`run`): source → engine → sinks, offsets, shutdown.
//! - [`metrics`]: Prometheus metrics and the HTTP server for `/metrics`, `/healthz`, `/readyz`.
//! - [`backtest`]: replay of a JSONL file through the engine.
//! - [`simulate`]: a simulated sales organisation with planted diversion.
//! - [`import`]: public CRM data converted to schema-v1 events.
//! - [`demo`]: everything on one machine: mock broker, simulator, service.
//! - [`config`]: typed configuration, its layers and validation.
//! - [`time`]: event-time timestamps.

/// The allocator of every program built on this crate — the binary, the
/// benches, the tests: the engine allocates small, short-lived values (ids,
/// facts, evidence) on every event, and mimalloc serves them faster than the
/// system allocator. Declared once here so that what is benchmarked is what
/// runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod alert;
pub mod backtest;
pub mod changelog;
pub mod config;
pub mod demo;
pub mod detect;
pub mod engine;
pub mod event;
pub mod import;
pub mod kafka;
pub mod metrics;
pub mod service;
pub mod simulate;
pub mod stats;
pub mod time;
