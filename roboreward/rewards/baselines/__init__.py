"""Baselines every reward model is compared with: time regression (progress = t / T) and a
per-frame success classifier, both over the same cached features."""
from ..features import FrameStream
from .frame import FrameRewardConfig, FrameRewardModel
from .success_classifier import SuccessClassifier, SuccessClassifierConfig
from .time_regression import TimeRegression, TimeRegressionConfig

__all__ = ["FrameRewardConfig", "FrameRewardModel", "FrameStream", "SuccessClassifier", "SuccessClassifierConfig",
           "TimeRegression", "TimeRegressionConfig"]
