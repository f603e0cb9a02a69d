"""py_ref.network: the int8 Fashion-MNIST CNN of accelerator layers and its integer reference."""

import numpy as np
import pytest
import torch

from py_ref import data, network, velcro
from py_ref.golden import golden_ofm
from py_ref.models import load_fmnist_cnn


@pytest.fixture(scope="module")
def setup():
    model = load_fmnist_cnn()
    xc, _ = data.calibration("footwear", 64, 0)
    xv, yv = data.validation("footwear", 32, 0)
    stats = velcro.profile(model, data.batches(xc, None, 64), skip_first=True)
    masks = velcro.make_masks(stats, [0.3] * len(stats))
    qnet = network.quantise_network(model, xc, stats, masks)
    return model, xc, xv, yv, stats, masks, qnet


def test_layers_follow_the_model(setup):
    model, *_, qnet = setup
    assert qnet.names == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert [l.shape for l in qnet.layers] == [(64, 64, 1, 16), (64, 64, 16, 16), (64, 64, 16, 16),
                                              (32, 32, 16, 32), (16, 16, 32, 32)]
    assert [l.pool for l in qnet.layers] == [None, None, None, "maxpool2", "maxpool2"]
    # conv1's point is not profiled (skip_first): dense; every other point at T = 0.3
    assert qnet.layers[0].ratio == 0
    for layer in qnet.layers[1:]:
        assert abs(layer.ratio - 0.3) <= 1 / layer.mask[0].size
    # each layer's input scale is the previous layer's output scale doubled
    for prev, layer in zip(qnet.layers, qnet.layers[1:]):
        assert layer.s_x == 2 * prev.s_y


def test_next_input_is_the_halved_pooled_output():
    q = np.array([[[[0, 1, 2, 3], [4, 5, 254, 255], [9, 8, 7, 6], [1, 1, 1, 1]]]], np.uint8)
    assert network.to_next_input(q, None).tolist() == [[[[0, 1, 1, 2], [2, 3, 127, 127],
                                                          [5, 4, 4, 3], [1, 1, 1, 1]]]]
    assert network.to_next_input(q, "maxpool2").tolist() == [[[[3, 127], [5, 4]]]]
    assert network.to_next_input(q, None).dtype == np.int8
    with pytest.raises(velcro.VelcroError, match="uint8"):
        network.to_next_input(q.astype(np.int16), None)
    with pytest.raises(velcro.VelcroError, match="even map"):
        network.max_pool2(q[..., :3])
    with pytest.raises(velcro.VelcroError, match="unknown pooling"):
        network.to_next_input(q, "avgpool2")


def test_reference_is_the_golden_model_layer_after_layer(setup):
    model, _, xv, *_, qnet = setup
    x = qnet.quantise_input(model, xv[:2])
    ref = qnet.reference(x)
    assert [o.shape[1:] for o in ref["ofm"]] == [(16, 64, 64), (16, 64, 64), (16, 64, 64),
                                                 (32, 32, 32), (32, 16, 16)]
    inputs = x
    for i, layer in enumerate(qnet.layers):
        if i:
            inputs = qnet.input_of(i, ref["ofm"][i - 1])
        for k in range(len(x)):
            assert np.array_equal(ref["ofm"][i][k], golden_ofm(layer.frame(inputs[k])))
            # compressed elements carry the layer's means
            assert np.array_equal(ref["ofm"][i][k][layer.mask], layer.means[layer.mask])
    acc, logits = qnet.classify(ref["ofm"][-1])
    assert acc.dtype == np.int64 and np.array_equal(acc, ref["acc"])
    assert np.array_equal(logits, acc * qnet.fc_scale)


def test_classifier_is_the_quantised_linear_layer(setup):
    """acc * scale equals the float linear layer on the dequantised average pool and the
    dequantised int8 weights, up to the bias's rounding (half a step of acc per logit) and
    float64 rounding."""
    *_, qnet = setup
    rng = np.random.default_rng(3)
    q5 = rng.integers(0, 256, (3, 32, 16, 16), dtype=np.uint8)
    _, logits = qnet.classify(q5)
    s_y = qnet.layers[-1].s_y
    pooled = q5.astype(np.float64).reshape(3, 32, 4, 4, 4, 4).mean(axis=(3, 5)) * s_y
    s_fc = qnet.fc_scale * 16 / s_y
    w = qnet.fc_weight.astype(np.float64) * s_fc[:, None]
    bias = qnet.fc_bias * qnet.fc_scale
    expected = pooled.reshape(3, -1) @ w.T + bias
    assert np.abs(logits - expected).max() <= 1e-9 * np.abs(expected).max() + 1e-12
    assert np.all(np.abs(bias - (bias / qnet.fc_scale).round() * qnet.fc_scale) <= qnet.fc_scale)


def test_int8_agrees_with_float(setup):
    """The int8 reference and PyTorch's own int8 version agree with the float model on most
    held-out images (agreement, not equality: quantisation moves a few close calls)."""
    model, xc, xv, yv, stats, masks, qnet = setup
    ref = qnet.reference(qnet.quantise_input(model, xv))["logits"].argmax(axis=1)
    with torch.no_grad(), velcro.compressed(model, stats, masks):
        float_top1 = model(xv).argmax(dim=1).numpy()
    assert np.mean(ref == float_top1) >= 0.9
    torch_int8 = network.torch_int8_top1(model, xc, xv)
    with torch.no_grad():
        dense = model(xv).argmax(dim=1).numpy()
    assert torch_int8.shape == dense.shape and np.mean(torch_int8 == dense) >= 0.9


def test_masks_must_be_the_layers_points(setup):
    model, xc, *_ = setup
    stats = velcro.profile(model, data.batches(xc[:8], None, 8), skip_first=True)
    masks = velcro.make_masks(stats, [0.3] * len(stats))
    wrong = [velcro.PointStats(stats[0].name, stats[1].index, stats[0].mean, stats[0].m2,
                               stats[0].count)]
    with pytest.raises(velcro.VelcroError, match="is not conv3's output"):
        network.quantise_network(model, xc[:8], wrong, masks[:1])
