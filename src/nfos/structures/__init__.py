"""Built-in shared data structures (paper §4.5): the only aggregate state an NF has.

Each structure lives in the shared arena, is created in ``@nf.init`` (or at
module level) with a fixed capacity, is used only inside handlers, and
records where it was created so the profiler can name it.
"""

from nfos.structures.allocator import Allocator
from nfos.structures.base import StructInfo, registry
from nfos.structures.counter import Counter
from nfos.structures.distributed import DistributedObj
from nfos.structures.map import Map
from nfos.structures.vector import Vector

__all__ = ["Allocator", "Counter", "DistributedObj", "Map", "StructInfo", "Vector", "registry"]
