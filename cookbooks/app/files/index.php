<?php
// kiln demo shop: one request proves the stack.
//   listings: memcached read-through cache in front of MariaDB
//             ("served from memcached" on a hit, "served from MariaDB" on a miss)
//   views:    a Redis counter (INCR), printed as "views: N"
$cfg = require '/etc/kiln-shop/config.php';
header('Content-Type: text/html; charset=utf-8');
header('Cache-Control: no-store');

$key = 'kiln-shop:listings';
$rows = false;
$source = 'MariaDB';
$mc = null;
if (class_exists('Memcached')) {
    $mc = new Memcached();
    $mc->setOption(Memcached::OPT_CONNECT_TIMEOUT, 500);
    $mc->addServer($cfg['memcached_host'], (int) $cfg['memcached_port']);
    $rows = $mc->get($key);
}
if (is_array($rows)) {
    $source = 'memcached';
} else {
    mysqli_report(MYSQLI_REPORT_ERROR | MYSQLI_REPORT_STRICT);
    try {
        $db = new mysqli($cfg['db_host'], $cfg['db_user'], $cfg['db_password'],
                         $cfg['db_name'], (int) $cfg['db_port']);
        $db->set_charset('utf8mb4');
        $res = $db->query('SELECT id, name, price_cents FROM listings ORDER BY id');
        $rows = $res->fetch_all(MYSQLI_ASSOC);
        $db->close();
    } catch (mysqli_sql_exception $e) {
        http_response_code(503);
        echo "<!doctype html><title>unavailable</title><p>database unavailable: ",
            htmlspecialchars($e->getMessage()), "</p>\n";
        exit;
    }
    if ($mc !== null) {
        $mc->set($key, $rows, (int) $cfg['cache_ttl']);
    }
}

$views = 'unavailable';
if (class_exists('Redis')) {
    try {
        $r = new Redis();
        $r->connect($cfg['redis_host'], (int) $cfg['redis_port'], 1.0);
        $views = (string) $r->incr('kiln-shop:views');
        $r->close();
    } catch (RedisException $e) {
        $views = 'unavailable';
    }
}

$h = fn($s) => htmlspecialchars((string) $s, ENT_QUOTES);
?>
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title><?= $h($cfg['title']) ?></title>
<link rel="stylesheet" href="/static/shop.css">
</head>
<body>
<h1><?= $h($cfg['title']) ?></h1>
<ul class="listings">
<?php foreach ($rows as $row): ?>
<li><span class="name"><?= $h($row['name']) ?></span> <span class="price"><?= sprintf('%.2f', $row['price_cents'] / 100) ?> EUR</span></li>
<?php endforeach; ?>
</ul>
<p class="source">listings served from <?= $h($source) ?></p>
<p class="views">views: <?= $h($views) ?></p>
<p class="host"><?= $h(gethostname()) ?></p>
</body>
</html>
