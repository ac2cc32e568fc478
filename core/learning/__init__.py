"""Deep learning for the study's tasks: model builders, weights, augmentation, data, training.

``models`` builds VGG19, ResNet50 and DenseNet121 classifiers (and a GSU+SWE fusion model),
``weights`` finds ImageNet weights offline, ``augment`` holds the study's augmentation as
Keras preprocessing layers, ``dataset`` turns stored cases into model-ready arrays and
patient-level splits, ``train`` trains one run end to end, ``gradcam`` explains a prediction,
and ``features`` + ``baseline`` give the radiomics-style comparison.

Import the modules themselves (``from core.learning import train``): importing this package
stays cheap because TensorFlow loads only with the modules that need it.
"""

__all__ = ["augment", "baseline", "dataset", "features", "gradcam", "models", "train", "weights"]
