//! Borrowed RGB images and boxes: the common currency between the frame source, the
//! detector and the models, with no dependency on GStreamer.

/// A borrowed, packed 8-bit RGB image whose rows may be padded (`stride` ≥ 3·width).
#[derive(Debug, Clone, Copy)]
pub struct RgbView<'a> {
    data: &'a [u8],
    width: usize,
    height: usize,
    stride: usize,
}

impl<'a> RgbView<'a> {
    /// Wraps `data`; `None` when the buffer is too small for the stated geometry.
    pub fn new(data: &'a [u8], width: usize, height: usize, stride: usize) -> Option<Self> {
        let needed = if height == 0 { 0 } else { stride * (height - 1) + width * 3 };
        (stride >= width * 3 && data.len() >= needed && width > 0 && height > 0).then_some(RgbView {
            data,
            width,
            height,
            stride,
        })
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// One row of `3·width` bytes.
    #[inline]
    pub fn row(&self, y: usize) -> &'a [u8] {
        let start = y * self.stride;
        &self.data[start..start + self.width * 3]
    }
}

/// An owned packed RGB image (stride = 3·width), for stills and tests.
#[derive(Debug, Clone)]
pub struct RgbImage {
    /// Packed pixels, row after row.
    pub data: Vec<u8>,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
}

impl RgbImage {
    /// Borrows the image.
    pub fn view(&self) -> RgbView<'_> {
        RgbView { data: &self.data, width: self.width, height: self.height, stride: self.width * 3 }
    }
}

/// An axis-aligned box in pixels (or any unit both sides agree on); origin top-left.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Rect {
    /// Left edge.
    pub x: f32,
    /// Top edge.
    pub y: f32,
    /// Width.
    pub w: f32,
    /// Height.
    pub h: f32,
}

impl Rect {
    /// Builds a box from its centre and size.
    pub fn from_center(cx: f32, cy: f32, w: f32, h: f32) -> Rect {
        Rect { x: cx - w / 2.0, y: cy - h / 2.0, w, h }
    }

    /// Area (zero for degenerate boxes).
    pub fn area(&self) -> f32 {
        self.w.max(0.0) * self.h.max(0.0)
    }

    /// Intersection over union, 0 when they do not touch.
    pub fn iou(&self, other: &Rect) -> f32 {
        let x0 = self.x.max(other.x);
        let y0 = self.y.max(other.y);
        let x1 = (self.x + self.w).min(other.x + other.w);
        let y1 = (self.y + self.h).min(other.y + other.h);
        let inter = (x1 - x0).max(0.0) * (y1 - y0).max(0.0);
        let union = self.area() + other.area() - inter;
        if union > 0.0 { inter / union } else { 0.0 }
    }

    /// Scales width and height about the centre (e.g. 1.2 for a margin).
    pub fn scaled(&self, sx: f32, sy: f32) -> Rect {
        Rect::from_center(self.x + self.w / 2.0, self.y + self.h / 2.0, self.w * sx, self.h * sy)
    }

    /// The part of the box inside `0..width × 0..height`.
    pub fn clamped(&self, width: f32, height: f32) -> Rect {
        let x0 = self.x.clamp(0.0, width);
        let y0 = self.y.clamp(0.0, height);
        let x1 = (self.x + self.w).clamp(0.0, width);
        let y1 = (self.y + self.h).clamp(0.0, height);
        Rect { x: x0, y: y0, w: x1 - x0, h: y1 - y0 }
    }

    /// Whether the point lies inside the box.
    #[inline]
    pub fn contains(&self, px: f32, py: f32) -> bool {
        px >= self.x && px < self.x + self.w && py >= self.y && py < self.y + self.h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_identical_and_disjoint_boxes() {
        let a = Rect { x: 0.0, y: 0.0, w: 10.0, h: 10.0 };
        assert_eq!(a.iou(&a), 1.0);
        assert_eq!(a.iou(&Rect { x: 20.0, y: 0.0, w: 5.0, h: 5.0 }), 0.0);
        let half = Rect { x: 5.0, y: 0.0, w: 10.0, h: 10.0 };
        assert!((a.iou(&half) - 50.0 / 150.0).abs() < 1e-6);
    }

    #[test]
    fn view_rejects_short_buffers() {
        assert!(RgbView::new(&[0u8; 11], 2, 2, 6).is_none());
        assert!(RgbView::new(&[0u8; 12], 2, 2, 6).is_some());
    }
}
