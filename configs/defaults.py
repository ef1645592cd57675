"""The yacs tree of defaults: every setting of hrnet-hand, one comment per key.

Key names follow the official HRNet-Facial-Landmark-Detection config where one exists
(``MODEL.NAME``, ``TRAIN.LR``, ``DATASET.ROOT`` ...), so its users feel at home.
"""
from yacs.config import CfgNode as CN

_C = CN()

_C.OUTPUT_DIR = "output"  # runs go to OUTPUT_DIR/<experiment>/
_C.EXPERIMENT_NAME = ""  # run folder name; empty = the yaml file's stem
_C.WORKERS = 4  # DataLoader worker processes per rank
_C.PRINT_FREQ = 20  # iterations between train/loss_iter TensorBoard points
_C.SEED = 0  # seeds python, numpy and torch; a CPU run is repeatable
_C.DEVICE = "auto"  # auto (cuda if available) | cpu | cuda
_C.CHANNELS_LAST = True  # NHWC memory format for the model and inputs (faster on CPU and GPU)
_C.DETERMINISTIC = False  # deterministic kernels only (slower); refused on CUDA, where bilinear upsampling's backward has none
_C.TF32 = False  # CUDA only: float32 matmuls/convolutions on TF32 tensor cores (faster, ~1e-3 relative error); no effect on CPU

_C.AMP = CN()
_C.AMP.MODE = "off"  # off (float32) | on (autocast with DTYPE) | auto (bf16 where native: CUDA, AVX512-BF16/AMX CPUs; else float32); see hrnet/runtime/device.py
_C.AMP.DTYPE = "bf16"  # bf16 | fp16 for AMP.MODE on (fp16: CUDA only, adds a GradScaler)

_C.CUDNN = CN()
_C.CUDNN.BENCHMARK = True  # cudnn autotuner (input size is fixed)

_C.MODEL = CN()
_C.MODEL.NAME = "hrnet_w18"  # timm backbone: hrnet_w18 | hrnet_w18_small | hrnet_w18_small_v2 | hrnet_w32 | hrnet_w48
_C.MODEL.NUM_JOINTS = 21  # keypoints per hand
_C.MODEL.PRETRAINED = ""  # local weights file (ImageNet HRNetV2 / timm / HRNet-Facial HR18-*.pth); empty = random init
_C.MODEL.IMAGE_SIZE = [256, 256]  # network input [width, height] in pixels
_C.MODEL.HEATMAP_SIZE = [64, 64]  # output heatmaps [width, height] (stride 4)
_C.MODEL.SIGMA = 2.0  # Gaussian sigma of the target heatmaps, in heatmap pixels
_C.MODEL.FINAL_CONV_KERNEL = 1  # kernel of the head's last conv (1 as in HRNet-Facial)
_C.MODEL.BN_MOMENTUM = 0.01  # BatchNorm momentum of every layer (0.01 as in HRNet-Facial; timm uses 0.1)

_C.DATASET = CN()
_C.DATASET.FORMAT = "synthetic"  # synthetic | coco | csv
_C.DATASET.ROOT = "datasets/synthetic_hands"  # image folder; annotation file names are relative to it
_C.DATASET.TRAINSET = "train.json"  # training annotation file (absolute, or relative to ROOT)
_C.DATASET.TESTSET = "test.json"  # test/validation annotation file (absolute, or relative to ROOT)
_C.DATASET.MAX_TRAIN_SAMPLES = 0  # use only the first N training samples (0 = all)
_C.DATASET.MAX_TEST_SAMPLES = 0  # use only the first N test samples (0 = all)
_C.DATASET.BBOX_PADDING = 1.25  # crop side = padding * max(bbox w, bbox h)
_C.DATASET.FLIP = True  # random horizontal flip in training (hands: no keypoint swap)
_C.DATASET.FLIP_PROB = 0.5  # probability of the horizontal flip
_C.DATASET.SCALE_FACTOR = 0.25  # training crop scale drawn from [1 - f, 1 + f]
_C.DATASET.ROT_FACTOR = 30.0  # training rotation drawn from [-f, f] degrees
_C.DATASET.ROT_PROB = 0.6  # probability of applying the rotation
_C.DATASET.COLOR_AUG = True  # albumentations photometric augmentation in training
_C.DATASET.BRIGHTNESS = 0.2  # brightness/contrast jitter limit
_C.DATASET.HUE = 10  # hue shift limit (degrees of OpenCV hue)
_C.DATASET.SATURATION = 20  # saturation shift limit
_C.DATASET.BLUR_PROB = 0.1  # probability of a Gaussian blur
_C.DATASET.NOISE_PROB = 0.1  # probability of Gaussian noise
_C.DATASET.COLOR_PROB = 0.5  # probability of each of the brightness/contrast and hue/saturation jitters
_C.DATASET.NOISE_STD = 0.04  # Gaussian noise std drawn from [NOISE_STD / 4, NOISE_STD], fraction of 255
_C.DATASET.REDUCED_DECODE = True  # decode a JPEG at 1/2, 1/4, 1/8 size when the crop downsamples it that much anyway (faster)
_C.DATASET.ON_BAD_SAMPLE = "error"  # error | skip: what a bad annotation does (skip warns)
_C.DATASET.SYNTHETIC = CN()
_C.DATASET.SYNTHETIC.NUM_TRAIN = 21120  # images rendered for the training split
_C.DATASET.SYNTHETIC.NUM_TEST = 3000  # images rendered for the test split
_C.DATASET.SYNTHETIC.SEED = 0  # renderer seed (same seed, same files)

_C.TRAIN = CN()
_C.TRAIN.BATCH_SIZE_PER_GPU = 32  # images per step per process
_C.TRAIN.SHUFFLE = True  # shuffle the training set each epoch
_C.TRAIN.BEGIN_EPOCH = 0  # first epoch (resume sets it from the checkpoint)
_C.TRAIN.END_EPOCH = 30  # epochs to train
_C.TRAIN.RESUME = False  # continue from OUTPUT_DIR/<experiment>/checkpoint_latest.pth
_C.TRAIN.OPTIMIZER = "adam"  # sgd | adam | adamw | rmsprop | lookahead | any timm optimizer name
_C.TRAIN.LR = 0.0001  # base learning rate
_C.TRAIN.LR_FACTOR = 0.1  # MultiStep decay factor
_C.TRAIN.LR_STEP = [20, 25]  # epochs after which the LR is multiplied by LR_FACTOR
_C.TRAIN.WARMUP_ITERS = 0  # linear warm-up length in iterations (0 = off)
_C.TRAIN.WARMUP_FACTOR = 0.001  # LR multiplier at the first warm-up iteration
_C.TRAIN.WD = 0.0  # weight decay
_C.TRAIN.NO_WD_BN_BIAS = False  # exclude BN and bias parameters from weight decay
_C.TRAIN.MOMENTUM = 0.9  # SGD momentum (and RMSprop momentum if RMSPROP_MOMENTUM < 0)
_C.TRAIN.NESTEROV = False  # SGD Nesterov momentum
_C.TRAIN.ADAM_BETAS = [0.9, 0.999]  # Adam/AdamW betas
_C.TRAIN.ADAM_EPS = 1e-8  # Adam/AdamW epsilon
_C.TRAIN.RMSPROP_ALPHA = 0.99  # RMSprop smoothing constant (torch default)
_C.TRAIN.RMSPROP_EPS = 1e-8  # RMSprop epsilon (torch default)
_C.TRAIN.RMSPROP_MOMENTUM = 0.0  # RMSprop momentum (torch default 0)
_C.TRAIN.CLIP_GRAD_NORM = 0.0  # clip the gradient norm to this value (0 = off)
_C.TRAIN.LOOKAHEAD = CN()
_C.TRAIN.LOOKAHEAD.INNER = "adam"  # the optimizer Lookahead wraps (any TRAIN.OPTIMIZER name but lookahead)
_C.TRAIN.LOOKAHEAD.K = 5  # fast steps per slow update
_C.TRAIN.LOOKAHEAD.ALPHA = 0.5  # slow-weight step size, 0 < alpha <= 1
_C.TRAIN.LOOKAHEAD.PULLBACK = "none"  # none | reset | pullback: inner momentum at a sync
_C.TRAIN.LOOKAHEAD.EVAL_WEIGHTS = "slow"  # slow | fast: weights used for validation and model_best.pth
_C.TRAIN.LOOKAHEAD.BN_RECALIBRATE_BATCHES = 0  # recompute BN statistics for the slow weights on N train batches (0 = off)

_C.TEST = CN()
_C.TEST.BATCH_SIZE_PER_GPU = 32  # images per evaluation step per process
_C.TEST.DECODE = "argmax"  # argmax (quarter-pixel shift, as official HRNet) | dark
_C.TEST.FLIP_TEST = False  # average with the prediction of the flipped image
_C.TEST.FAILURE_THRESHOLD = 0.1  # an image with NME above this counts as a failure
_C.TEST.PCK_THRESHOLD = 0.2  # PCK threshold, fraction of the bbox size (mmpose hands)
_C.TEST.AUC_MAX_PX = 30.0  # AUC of PCK over thresholds 0..AUC_MAX_PX pixels (mmpose hands)
_C.TEST.MODEL_FILE = ""  # checkpoint evaluated by tools/test.py (or --model-file)
_C.TEST.VIS_IMAGES = 8  # validation crops in the TensorBoard image grid valid/predictions (0 = no grid)
_C.TEST.VIS_HEATMAP = False  # overlay the summed predicted heatmap on that grid (one extra forward of those crops)


def get_defaults() -> CN:
    """A fresh, mutable copy of the defaults."""
    return _C.clone()
