"""Files -> ``GaitSet`` (variable-length ``(T, 16, 3)`` clips) -> windows, splits, preprocessed arrays.

- ``GaitSet``, ``load_user_data``: the container and its ``.npz`` format (users' own data).
- ``load_egait``: E-Gait / STEP HDF5 files.
- ``read_bvh``: one BVH clip -> 16 joints (own vectorised forward kinematics); ``read_joint_map``: a
  JSON joint map file, checked.
- ``load_bandai``, ``emotion_clips``: the Bandai-Namco BVH release and its emotion task.
- ``load_embedded``: the compact Bandai walking set committed under ``data/``.
- ``cut_windows``; ``splits``: ``stratified_split``, ``grouped_split``, ``repeated_grouped_kfold``,
  ``stratified_subset``, ``stratified_holdout`` (every split keeps a clip's windows together).
- ``tasks``: the Bandai emotion task and pretraining corpus; ``synthetic``: E-Gait-shaped test data.
- ``preprocess`` (``center_root``, ``normalize_view``, ``pad_or_crop``).
"""
from .bandai import EMOTION_LABEL_NAMES, emotion_clips, load_bandai, load_compact, load_embedded, save_compact
from .bvh import BANDAI_JOINT_MAP, forward_kinematics, read_bvh, read_bvh_clip, read_joint_map
from .egait import FILENAME_LABEL_NAMES, STEP_LABEL_NAMES, load_egait
from .gaitset import GaitSet, load_user_data
from .preprocess import center_root, normalize_view, pad_or_crop, preprocess, preprocess_gaitset
from .splits import grouped_split, repeated_grouped_kfold, stratified_holdout, stratified_split, stratified_subset
from .windows import Windows, cut_windows

__all__ = [
    "GaitSet", "load_user_data", "load_egait", "STEP_LABEL_NAMES", "FILENAME_LABEL_NAMES",
    "read_bvh", "read_bvh_clip", "read_joint_map", "forward_kinematics", "BANDAI_JOINT_MAP",
    "load_bandai", "emotion_clips", "EMOTION_LABEL_NAMES", "load_embedded", "load_compact", "save_compact",
    "Windows", "cut_windows", "stratified_split", "grouped_split", "repeated_grouped_kfold", "stratified_subset",
    "stratified_holdout",
    "center_root", "normalize_view", "pad_or_crop", "preprocess", "preprocess_gaitset",
]
