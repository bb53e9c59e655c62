//! Face detection, the pure part: BlazeFace's outputs decoded against its SSD anchors,
//! merged with weighted NMS, mapped back to frame pixels, and filtered by each camera's
//! zones. The engine runs the model (`engine::Detector`) and hands its tensors here.

pub mod anchors;
pub mod blazeface;
pub mod filter;
pub mod nms;

use crate::image::Rect;

/// One face in frame pixel coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// Face box.
    pub rect: Rect,
    /// Detector confidence, 0..1.
    pub score: f32,
    /// Eyes, nose, mouth, ears (right eye first, as MediaPipe orders them).
    pub keypoints: [[f32; 2]; 6],
}
