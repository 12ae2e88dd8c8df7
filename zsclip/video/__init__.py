"""Video files -> frames sampled by timestamp -> image embeddings, through the image-embedding store.

`container` (opening, the header, frames as RGB, writing), `sampling` (which frame each sample takes, decoded
sparingly), `frames` (the embeddings of a video's samples, and their place in the store)."""

from zsclip.video.container import (
    VideoInfo,
    check_available,
    frame_rgb,
    grab_frames,
    open_container,
    probe,
    write_video,
)
from zsclip.video.frames import VideoFrames, VideoStore, embed_video, video_key
from zsclip.video.sampling import NONREF_RATIO, SAMPLING, FrameReader, check_fps, describe_gaps

__all__ = [
    "NONREF_RATIO",
    "SAMPLING",
    "FrameReader",
    "VideoFrames",
    "VideoInfo",
    "VideoStore",
    "check_available",
    "check_fps",
    "describe_gaps",
    "embed_video",
    "frame_rgb",
    "grab_frames",
    "open_container",
    "probe",
    "video_key",
    "write_video",
]
