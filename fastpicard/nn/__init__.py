"""Drop-in Picard-iterative modules: PIGN (graphs), IterativeViT (wraps a ViT), FieldViT
(a small ViT for 2-D fields), ANIE (attentional neural integral equations)."""
from .anie import ANIE
from .attention import Attention, Block
from .field_vit import FieldViT
from .gat import GATLayer
from .gcn import GCNLayer
from .iterative_vit import IterativeViT
from .itergnn import IterGNN
from .pign import PIGN

__all__ = ["PIGN", "IterativeViT", "FieldViT", "ANIE", "GCNLayer", "Attention", "Block"]
__all__ += ["IterGNN", "GATLayer"]
