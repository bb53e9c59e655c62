//! clefd: camera streams in, debiased emotion events out.
//!
//! The crate is laid out one responsibility per module, leaves first:
//! [`clef`] (pure math), [`image`], [`config`], [`jetson`] (which Jetson this is), [`source`]
//! (GStreamer), [`engine`]
//! (bundles, ONNX Runtime), [`detect`], [`track`], [`events`], [`pipeline`] (wires the
//! core, knows nothing of MQTT or systemd), [`mqtt`] and [`service`] (the edges), and
//! [`eval`] (scoring analyses against labelled data). The command-line tools (`clefd watch`,
//! synthetic clips, reports) live beside the CLI in `src/cmd`.

#![warn(missing_docs)]

pub mod backoff;
pub mod clef;
pub mod config;
pub mod detect;
pub mod engine;
pub mod eval;
pub mod events;
pub mod history;
pub mod image;
pub mod jetson;
pub mod mqtt;
pub mod pipeline;
pub mod service;
pub mod source;
pub mod track;
