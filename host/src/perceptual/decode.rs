//! Pictures from bytes: recognised by their magic bytes, decoded under limits that refuse
//! a decompression bomb before it is decoded.

use std::io::Cursor;

use image::{ImageFormat, ImageReader};

use super::pdq::Luma;

/// A picture format PDQ is computed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Picture {
    /// JPEG (`ff d8 ff`).
    Jpeg,
    /// PNG (`89 P N G \r \n 1a \n`).
    Png,
    /// WebP (`RIFF`, a length, `WEBP`).
    WebP,
    /// GIF 87a or 89a; its first frame is hashed.
    Gif,
    /// BMP (`BM`).
    Bmp,
    /// TIFF, either byte order (`II*\0`, `MM\0*`).
    Tiff,
}

impl Picture {
    /// The format the first bytes of an object announce, if it is a picture (12 bytes
    /// suffice).
    ///
    /// ```
    /// use hashgate_host::perceptual::Picture;
    /// assert_eq!(Picture::sniff(b"\x89PNG\r\n\x1a\n...."), Some(Picture::Png));
    /// assert_eq!(Picture::sniff(b"RIFF\x10\0\0\0WEBPVP8 "), Some(Picture::WebP));
    /// assert_eq!(Picture::sniff(b"RIFF\x10\0\0\0WAVEfmt "), None);
    /// ```
    pub fn sniff(prefix: &[u8]) -> Option<Picture> {
        let starts = |magic: &[u8]| prefix.starts_with(magic);
        if starts(&[0xff, 0xd8, 0xff]) {
            Some(Picture::Jpeg)
        } else if starts(b"\x89PNG\r\n\x1a\n") {
            Some(Picture::Png)
        } else if starts(b"RIFF") && prefix.get(8..12) == Some(b"WEBP") {
            Some(Picture::WebP)
        } else if starts(b"GIF87a") || starts(b"GIF89a") {
            Some(Picture::Gif)
        } else if starts(b"BM") && prefix.len() >= 14 {
            Some(Picture::Bmp)
        } else if starts(b"II*\0") || starts(b"MM\0*") {
            Some(Picture::Tiff)
        } else {
            None
        }
    }

    /// A name for problems and audit records.
    pub fn name(self) -> &'static str {
        match self {
            Picture::Jpeg => "jpeg",
            Picture::Png => "png",
            Picture::WebP => "webp",
            Picture::Gif => "gif",
            Picture::Bmp => "bmp",
            Picture::Tiff => "tiff",
        }
    }

    fn format(self) -> ImageFormat {
        match self {
            Picture::Jpeg => ImageFormat::Jpeg,
            Picture::Png => ImageFormat::Png,
            Picture::WebP => ImageFormat::WebP,
            Picture::Gif => ImageFormat::Gif,
            Picture::Bmp => ImageFormat::Bmp,
            Picture::Tiff => ImageFormat::Tiff,
        }
    }
}

/// How large a picture may be to be decoded. A picture over a bound is not decoded: its
/// header's dimensions are read first, so a few kilobytes announcing 50,000 x 50,000
/// pixels cost nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PictureLimits {
    /// Pixels (width x height), at most.
    pub max_pixels: u64,
    /// Width or height, at most.
    pub max_dimension: u32,
    /// Bytes the decoder may allocate, at most.
    pub max_alloc: u64,
}

impl Default for PictureLimits {
    /// 50 megapixels, 20,000 on a side, 512 MiB: a 48-megapixel phone photo is hashed.
    fn default() -> Self {
        PictureLimits {
            max_pixels: 50_000_000,
            max_dimension: 20_000,
            max_alloc: 512 << 20,
        }
    }
}

/// Occurs when a picture cannot be hashed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PictureError {
    /// Occurs when a picture's header announces more pixels or a larger side than
    /// [`PictureLimits`] allow (a decompression bomb, or just a huge picture).
    #[error("{format} of {width} x {height} pixels is over the limits")]
    TooLarge {
        /// The format.
        format: &'static str,
        /// Announced width.
        width: u32,
        /// Announced height.
        height: u32,
    },
    /// Occurs when the picture uses a feature the decoder does not have (a TIFF
    /// compression scheme, as in camera raw files): nothing says it is broken.
    #[error("{format} is not supported here: {reason}")]
    Unsupported {
        /// The format.
        format: &'static str,
        /// What the decoder said.
        reason: String,
    },
    /// Occurs when the bytes do not decode as the picture their magic announces (or the
    /// decoder would allocate more than allowed).
    #[error("{format} does not decode: {reason}")]
    Malformed {
        /// The format.
        format: &'static str,
        /// What the decoder said.
        reason: String,
    },
}

/// Decodes `bytes`, a `picture`, to its luminance under `limits`. The pixels are taken as
/// stored: EXIF orientation is not applied, as in Meta's reference (a turned copy is
/// matched by the dihedral hashes instead).
pub fn decode(
    bytes: &[u8],
    picture: Picture,
    limits: &PictureLimits,
) -> Result<Luma, PictureError> {
    let format = picture.name();
    let malformed = |e: image::ImageError| match e {
        image::ImageError::Unsupported(_) => PictureError::Unsupported {
            format,
            reason: e.to_string(),
        },
        e => PictureError::Malformed {
            format,
            reason: e.to_string(),
        },
    };
    // The header is read with the allocation bound only, so that a picture over the
    // dimension bounds is reported with its size rather than as undecodable.
    let reader = |dimensions: bool| {
        let mut reader = ImageReader::with_format(Cursor::new(bytes), picture.format());
        let mut bounds = image::Limits::default();
        if dimensions {
            bounds.max_image_width = Some(limits.max_dimension);
            bounds.max_image_height = Some(limits.max_dimension);
        }
        bounds.max_alloc = Some(limits.max_alloc);
        reader.limits(bounds);
        reader
    };
    let (width, height) = reader(false).into_dimensions().map_err(malformed)?;
    if width > limits.max_dimension
        || height > limits.max_dimension
        || u64::from(width) * u64::from(height) > limits.max_pixels
    {
        return Err(PictureError::TooLarge {
            format,
            width,
            height,
        });
    }
    let image = reader(true).decode().map_err(|e| match e {
        image::ImageError::Limits(_) => PictureError::TooLarge {
            format,
            width,
            height,
        },
        e => malformed(e),
    })?;
    let (cols, rows) = (image.width() as usize, image.height() as usize);
    Ok(match image {
        image::DynamicImage::ImageLuma8(grey) => Luma::from_grey8(grey.as_raw(), rows, cols),
        other => Luma::from_rgb8(other.to_rgb8().as_raw(), rows, cols),
    })
}
