"""llp_tf: Local Label Propagation in TensorFlow 2 / Keras 3."""
from setuptools import find_packages, setup

setup(
    name="llp_tf",
    version="0.1.0",
    description="Local Label Propagation (Zhuang et al. 2019) for TensorFlow 2 / Keras 3",
    python_requires=">=3.10",
    # The library is llp_tf/ with its subpackages; the command-line programs live in tools/ and install
    # as llp_tf.tools. scripts/ (benchmarks, the kill drill, the RESULTS.md runner) and tests/ are not
    # installed.
    packages=find_packages(include=["llp_tf", "llp_tf.*"]) + ["llp_tf.tools"],
    package_dir={"llp_tf": "llp_tf", "llp_tf.tools": "tools"},
    install_requires=[
        "tensorflow>=2.16,<3",  # Keras 3; GPU users: tensorflow[and-cuda]
        "keras>=3.3",
        "tensorflow-datasets>=4.9",
        "importlib_resources>=5",  # tensorflow-datasets imports it without declaring it
        "tensorboard>=2.16",  # TF 2.21 no longer pulls it in; tf.summary needs it
        "absl-py>=2.0",
        "numpy>=1.26",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist>=3", "scikit-learn>=1.4", "matplotlib>=3.8", "scipy>=1.12", "pillow>=10"],
        # llp-analyze (matplotlib, scikit-learn), llp-compare-propagation (scikit-learn, SciPy)
        "analysis": ["matplotlib>=3.8", "scikit-learn>=1.4", "scipy>=1.12"],
    },
    entry_points={
        "console_scripts": [
            "llp-train=llp_tf.tools.train:run",
            "llp-propagate=llp_tf.tools.propagate:run",
            "llp-export=llp_tf.tools.export:run",
            "llp-eval=llp_tf.tools.evaluate:run",
            "llp-analyze=llp_tf.tools.analyze:run",
            "llp-compare-propagation=llp_tf.tools.compare_propagation:run",
            "llp-transfer=llp_tf.tools.transfer:run",
        ],
    },
)
