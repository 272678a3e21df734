"""ImageNet input statistics: one home for the pipeline and the backbone.

Clips are RGB in [0, 1] normalised with ``IMAGENET_MEAN`` / ``IMAGENET_STD``
(torchvision's convention, which the reference uses). Keras-applications
weights expect caffe-style input instead: BGR in 0..255 minus ``CAFFE_MEAN_BGR``.
"""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
