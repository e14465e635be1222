"""Video restoration helpers: face tracks across frames and temporal smoothing of their landmarks."""

from honestface.video.smoothing import SMOOTHING_METHODS, smooth_points, smooth_track
from honestface.video.tracks import FaceTrack, box_iou, link_tracks

__all__ = ["SMOOTHING_METHODS", "FaceTrack", "box_iou", "link_tracks", "smooth_points", "smooth_track"]
