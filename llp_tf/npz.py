"""Reading a .npz archive a user hands in (a features file, an npz dataset): anything else, a damaged
archive or an array of Python objects is refused with one line naming the file, the array and the fix.
No TensorFlow here."""
import os
import zipfile

import numpy as np

NPY_MAGIC = b"\x93NUMPY"  # how an .npy file (np.save, one array) starts


def open_npz(path: str):
    """np.load of the .npz archive at `path` (a context manager; objects are never unpickled).
    FileNotFoundError if nothing is there; ValueError naming the file if it is not an .npz."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"{path} is a directory, not an .npz file")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as file:
            start = file.read(len(NPY_MAGIC))
        what = ("an .npy file (one array, written by np.save)" if start == NPY_MAGIC
                else "not an .npz archive")
        raise ValueError(f"{path} is {what}: write the arrays into one .npz with "
                         "np.savez(path, name=array, ...)")
    return np.load(path, allow_pickle=False)


def read_array(archive, key: str, path: str) -> np.ndarray:
    """archive[key], with an error naming `path` and `key` for an array of Python objects or a
    damaged member."""
    try:
        return archive[key]
    except ValueError as error:
        if "allow_pickle" not in str(error):
            raise ValueError(f"{path}: array {key!r} cannot be read: {error}") from None
        raise ValueError(f"{path}: array {key!r} holds Python objects (dtype=object), which are not "
                         "read: store it as a numeric array (class names as a string array)") from None
    except (zipfile.BadZipFile, EOFError, OSError) as error:
        raise ValueError(f"{path}: array {key!r} cannot be read ({error}): the file is damaged, "
                         "write it again") from None
